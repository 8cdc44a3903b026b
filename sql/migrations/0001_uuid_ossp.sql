-- uuid_generate_v4() for primary keys, as the original schema used.
CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
