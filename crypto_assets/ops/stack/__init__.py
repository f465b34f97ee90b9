"""The docker-compose stack without Docker: its services as local processes (scripts/stack_test.sh)."""
