DROP TABLE submissions;
DROP TABLE leases;
DROP TABLE flows;
DROP TABLE signing_keys;
ALTER TABLE grant_state DROP COLUMN creates;
