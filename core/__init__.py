"""Infrastructure shared by the write side (indexer) and the read side (search_api).

Settings, logging, the PostgreSQL connection (embedded or external), schema
migrations and the patient document model. Depends only on `normalizers`.
"""
