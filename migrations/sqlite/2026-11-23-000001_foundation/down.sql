DROP TABLE audit_events;
DROP TABLE grant_state;
DROP TABLE grant_labels;
DROP TABLE grant_payloads;
DROP TABLE grants;
DROP TABLE clients;
DROP TABLE api_keys;
DROP TABLE tenants;
