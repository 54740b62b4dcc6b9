DROP TABLE push_nonces;
