-- Retention for web_fetch_cache: a purge function (14 days by default) and a metrics view the
-- post-deploy check reads (`oldest_fetched_at` must be inside the retention window).
create or replace function public.purge_web_fetch_cache(retention interval default interval '14 days')
returns integer
language plpgsql
as $$
declare
    removed integer;
begin
    delete from public.web_fetch_cache where fetched_at < now() - retention;
    get diagnostics removed = row_count;
    return removed;
end;
$$;

create or replace view public.web_fetch_cache_metrics as
select
    min(fetched_at) as oldest_fetched_at,
    max(fetched_at) as newest_fetched_at,
    count(*)::bigint as total_entries,
    count(*) filter (where fetched_at < now() - interval '14 days')::bigint as expired_entries,
    coalesce(sum(content_bytes), 0)::bigint as total_bytes,
    coalesce(sum(hit_count), 0)::bigint as total_hits,
    14 as retention_days
from public.web_fetch_cache;
