-- First start of the data-db volume only (the image runs /docker-entrypoint-initdb.d once).
-- The entrypoint has already created the database and the application user from
-- MYSQL_DATABASE / MYSQL_USER / MYSQL_PASSWORD (.env), with ALL on that database: passwords
-- stay in .env, never in SQL. This file pins what the entrypoint leaves to server defaults.

-- utf8mb4 explicitly: raw API payloads and rejected rows are stored verbatim, whatever they hold.
-- utf8mb4_unicode_ci exists on every MySQL 8.x (and MariaDB), unlike the 0900 collations.
ALTER DATABASE covertype CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
