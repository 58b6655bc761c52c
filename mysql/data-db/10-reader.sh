# First start of the data-db volume only: a read-only account for the UI (the UI reads the
# data DB, never writes). Shell rather than SQL because the password comes from .env.
# Not executable on purpose: the image's entrypoint then *sources* it, which gives it
# docker_process_sql (the official helper that talks to the temporary init server).
if [ -z "${DATA_DB_READER_USER:-}" ] || [ -z "${DATA_DB_READER_PASSWORD:-}" ]; then
	echo >&2 "10-reader.sh: DATA_DB_READER_USER and DATA_DB_READER_PASSWORD must be set (see .env)"
	exit 1
fi
docker_process_sql --database=mysql <<SQL
CREATE USER IF NOT EXISTS '${DATA_DB_READER_USER}'@'%' IDENTIFIED BY '${DATA_DB_READER_PASSWORD}';
GRANT SELECT ON \`${MYSQL_DATABASE}\`.* TO '${DATA_DB_READER_USER}'@'%';
FLUSH PRIVILEGES;
SQL
