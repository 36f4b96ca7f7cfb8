-- Runs once, when the postgres volume is first initialised: the search service's tables need pgvector.
CREATE EXTENSION IF NOT EXISTS vector;
