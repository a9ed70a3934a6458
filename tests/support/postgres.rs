//! A throwaway PostgreSQL cluster for the test binary (added by the sql issue).
