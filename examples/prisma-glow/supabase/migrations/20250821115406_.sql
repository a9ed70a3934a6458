-- Helper functions (set_updated_at, current_org_id, is_member_of) the runbook confirms exist.
create or replace function public.set_updated_at()
returns trigger
language plpgsql
as $$
begin
    new.updated_at = now();
    return new;
end;
$$;

create or replace function public.current_org_id()
returns uuid
language sql
stable
as $$
    select nullif(current_setting('app.org_id', true), '')::uuid
$$;

create or replace function public.is_member_of(org uuid)
returns boolean
language sql
stable
as $$
    select org = public.current_org_id()
$$;
