-- First start of the mlflow-db volume only. The entrypoint has already created the database
-- `mlflow` and the MLflow user from MYSQL_DATABASE / MYSQL_USER / MYSQL_PASSWORD (.env) with
-- ALL on it (MLflow's migrations create and alter their own tables). Passwords stay in .env.

-- utf8mb4: run names, tags and params are free text. unicode_ci exists on every MySQL 8.x.
ALTER DATABASE mlflow CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
