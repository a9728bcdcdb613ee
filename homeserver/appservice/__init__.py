"""Application services (bridges): registrations, transactions, queries."""
