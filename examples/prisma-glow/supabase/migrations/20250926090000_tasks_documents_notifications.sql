-- Tasks, documents and notifications: the core tables the API's /v1/tasks,
-- /v1/storage/documents and /v1/notifications endpoints read and write.

create table if not exists public.tasks (
    id uuid primary key default gen_random_uuid(),
    org_id uuid not null,
    title text not null,
    status text not null default 'todo' check (status in ('todo', 'in_progress', 'done', 'cancelled')),
    priority smallint not null default 2,
    assignee_id uuid,
    due_at timestamptz,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
create index if not exists tasks_org_status_idx on public.tasks (org_id, status);

create table if not exists public.documents (
    id uuid primary key default gen_random_uuid(),
    org_id uuid not null,
    task_id uuid references public.tasks (id) on delete set null,
    name text not null,
    storage_path text not null unique,
    mime_type text not null default 'application/octet-stream',
    size_bytes bigint not null default 0 check (size_bytes >= 0),
    metadata jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now()
);
create index if not exists documents_org_idx on public.documents (org_id, created_at desc);

create table if not exists public.notifications (
    id bigint generated always as identity primary key,
    org_id uuid not null,
    user_id uuid not null,
    kind text not null,
    payload jsonb not null default '{}'::jsonb,
    read_at timestamptz,
    created_at timestamptz not null default now()
);
create index if not exists notifications_unread_idx on public.notifications (user_id) where read_at is null;
