-- The activity event catalog (which events the activity feed knows) and the activity log,
-- both behind row level security: an org only sees its own activity.
create table if not exists public.activity_event_catalog (
    event_type text primary key,
    category text not null,
    description text not null,
    severity text not null default 'info' check (severity in ('info', 'warning', 'critical')),
    is_active boolean not null default true
);

insert into public.activity_event_catalog (event_type, category, description, severity) values
    ('task.created', 'tasks', 'A task was created', 'info'),
    ('task.completed', 'tasks', 'A task was completed', 'info'),
    ('document.uploaded', 'documents', 'A document was uploaded', 'info'),
    ('document.deleted', 'documents', 'A document was deleted', 'warning'),
    ('notification.mark_all', 'notifications', 'All notifications were marked read', 'info'),
    ('release_controls.checked', 'governance', 'Release controls were evaluated', 'critical')
on conflict (event_type) do nothing;

create table if not exists public.activity_log (
    id bigint generated always as identity primary key,
    org_id uuid not null,
    event_type text not null references public.activity_event_catalog (event_type),
    actor_id uuid,
    payload jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now()
);

alter table public.activity_event_catalog enable row level security;
alter table public.activity_log enable row level security;

-- Anyone may read the catalog; only the owner role changes it.
create policy activity_event_catalog_read on public.activity_event_catalog
    for select using (true);

-- Activity is visible to, and written by, the org named in the session (app.org_id).
create policy activity_log_org_read on public.activity_log
    for select using (org_id::text = current_setting('app.org_id', true));
create policy activity_log_org_write on public.activity_log
    for insert with check (org_id::text = current_setting('app.org_id', true));
