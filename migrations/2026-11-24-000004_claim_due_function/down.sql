DROP FUNCTION claim_due_messages(BIGINT, BIGINT);
