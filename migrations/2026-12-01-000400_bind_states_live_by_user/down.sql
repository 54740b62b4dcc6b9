DROP INDEX bind_states_live_by_user;
