-- An activity is served until it expires (expires_at is its ttl from creation); NULL never
-- expires (rows of the original schema).
(activities.expires_at IS NULL OR activities.expires_at > current_timestamp)
