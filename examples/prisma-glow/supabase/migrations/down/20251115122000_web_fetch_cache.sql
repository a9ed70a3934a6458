-- Down path for 20251115122000_web_fetch_cache.sql
drop table if exists public.web_fetch_cache;
