-- Cache of pages fetched by the RAG service's web fetch tool.
create table if not exists public.web_fetch_cache (
    url text primary key,
    content text not null,
    content_hash text not null,
    status_code integer not null default 200,
    content_bytes integer generated always as (octet_length(content)) stored,
    fetched_at timestamptz not null default now(),
    last_accessed_at timestamptz not null default now(),
    hit_count integer not null default 0
);
create index if not exists web_fetch_cache_fetched_at_idx on public.web_fetch_cache (fetched_at);
