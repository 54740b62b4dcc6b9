ALTER TABLE users DROP COLUMN demo;
DROP TABLE deployment;
