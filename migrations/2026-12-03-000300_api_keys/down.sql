DROP TABLE api_keys;
DROP TABLE api_key_secret;
