#!/bin/sh
# Runs once, when the postgres image initialises an empty data volume: the image runs the
# files of /docker-entrypoint-initdb.d in name order, as POSTGRES_USER (a superuser), against
# a server reachable only from inside the container. Later starts on the same volume skip it.
#
# Creates the role wxbind connects as and the database it owns. The role is no superuser and
# may create neither roles nor databases: owning its database is all the migrations need
# (tables and a SQL function in schema public, which PostgreSQL 15 lets the database owner
# create in). Nobody else may connect to that database, the superuser aside.
#
# The password comes from WXBIND_DB_PASSWORD; psql quotes it (:'app_password'), so any
# character is safe here (in DATABASE_URL, percent-encode what URLs reserve).
set -e
psql -v ON_ERROR_STOP=1 --no-psqlrc --username "$POSTGRES_USER" --dbname postgres \
    --set app_password="${WXBIND_DB_PASSWORD:?WXBIND_DB_PASSWORD is not set}" <<'SQL'
CREATE ROLE wxbind LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'app_password';
CREATE DATABASE wxbind OWNER wxbind;
REVOKE ALL ON DATABASE wxbind FROM PUBLIC;
SQL
