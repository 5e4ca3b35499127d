-- securechat user store, MySQL/MariaDB schema (version 6).
-- Load with:  mysql secure_chat < schema.sql
-- securechat also creates and migrates this schema itself on start (lib/store/schema.ts holds the
-- same statements; tests/store_mysql_test.ts checks that both give identical tables).
-- Times are Unix milliseconds. See docs/STORE.md.

CREATE TABLE IF NOT EXISTS schema_version (
  version INT NOT NULL PRIMARY KEY,
  applied_at BIGINT NOT NULL
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS users (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  username VARCHAR(32) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
  email VARCHAR(254) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
  password_scheme VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  password_iterations INT UNSIGNED NOT NULL,
  password_salt VARBINARY(64) NOT NULL,
  password_hash VARBINARY(64) NOT NULL,
  created_at BIGINT NOT NULL,
  last_login_at BIGINT NULL,
  UNIQUE KEY users_username (username),
  UNIQUE KEY users_email (email)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

INSERT IGNORE INTO schema_version (version, applied_at) VALUES (1, UNIX_TIMESTAMP() * 1000);

-- Migration 2 (issue 11 item 9): e-mail addresses are contact data, not unique, so that
-- registration cannot tell anyone whether an address is taken; the owner is told instead.
ALTER TABLE users DROP INDEX IF EXISTS users_email;
CREATE INDEX IF NOT EXISTS users_email_lookup ON users (email);
CREATE TABLE IF NOT EXISTS account_notices (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  user_id BIGINT UNSIGNED NOT NULL,
  text VARCHAR(512) CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci NOT NULL,
  created_at BIGINT NOT NULL,
  KEY account_notices_user (user_id),
  CONSTRAINT account_notices_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_unicode_ci;

INSERT IGNORE INTO schema_version (version, applied_at) VALUES (2, UNIX_TIMESTAMP() * 1000);

-- Migration 3 (issue 13): offline delivery. Records waiting for a user who was not online, in
-- delivery order, until their client acknowledges them or they expire (PROTOCOL §6.6).
CREATE TABLE IF NOT EXISTS message_queue (
  id BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,
  user_id BIGINT UNSIGNED NOT NULL,
  author VARCHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  item MEDIUMTEXT CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  stored_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  KEY message_queue_user (user_id, id),
  KEY message_queue_expiry (expires_at),
  CONSTRAINT message_queue_user_fk FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
) ENGINE=InnoDB;

INSERT IGNORE INTO schema_version (version, applied_at) VALUES (3, UNIX_TIMESTAMP() * 1000);

-- Migration 4 (issue 17): what a cluster's nodes share about credentials. credential_epoch
-- changes with every password change and resumption tickets carry it; login_failures holds the
-- login throttle's decided failures per certificate and per account (PROTOCOL §8.2).
ALTER TABLE users ADD COLUMN IF NOT EXISTS credential_epoch BIGINT NOT NULL DEFAULT 0;
UPDATE users SET credential_epoch = created_at WHERE credential_epoch = 0;
CREATE TABLE IF NOT EXISTS login_failures (
  subject VARCHAR(80) CHARACTER SET ascii COLLATE ascii_bin NOT NULL PRIMARY KEY,
  user_name VARCHAR(32) CHARACTER SET ascii COLLATE ascii_general_ci NULL,
  failures INT UNSIGNED NOT NULL,
  last_at BIGINT NOT NULL,
  KEY login_failures_user (user_name)
) ENGINE=InnoDB;

INSERT IGNORE INTO schema_version (version, applied_at) VALUES (4, UNIX_TIMESTAMP() * 1000);

-- Migration 5 (issue 13): the end-to-end key directory, one bundle per (user, device) (docs/PROTOCOL.md §12.6).
CREATE TABLE IF NOT EXISTS e2e_devices (
  username VARCHAR(32) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
  device CHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  cert VARBINARY(16384) NOT NULL,
  bundle TEXT CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  lobby TINYINT NOT NULL,
  updated_at BIGINT NOT NULL,
  PRIMARY KEY (username, device)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS e2e_prekeys (
  username VARCHAR(32) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
  device CHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  id INT UNSIGNED NOT NULL,
  pub VARBINARY(32) NOT NULL,
  PRIMARY KEY (username, device, id)
) ENGINE=InnoDB;

INSERT IGNORE INTO schema_version (version, applied_at) VALUES (5, UNIX_TIMESTAMP() * 1000);

-- Migration 6: the serial of the certificate each queued record was signed under, so a
-- revocation deletes what that certificate left queued when it reaches the server (PROTOCOL §6.6).
ALTER TABLE message_queue ADD COLUMN IF NOT EXISTS
  author_serial VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NULL;
CREATE INDEX IF NOT EXISTS message_queue_author_serial ON message_queue (author_serial);

INSERT IGNORE INTO schema_version (version, applied_at) VALUES (6, UNIX_TIMESTAMP() * 1000);
