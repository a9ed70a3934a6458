-- Down path for 20251115123000_web_fetch_cache_retention.sql
drop view if exists public.web_fetch_cache_metrics;
drop function if exists public.purge_web_fetch_cache(interval);
