-- Teams, virtual keys (only the sha256 of the secret), and spend per key/team/model/day.
CREATE TABLE teams (
    id              text PRIMARY KEY,
    alias           text,
    models          text[] NOT NULL DEFAULT '{}',   -- empty: every model
    rpm             integer CHECK (rpm >= 0),
    tpm             bigint CHECK (tpm >= 0),
    max_parallel    integer CHECK (max_parallel >= 0),
    budget          double precision CHECK (budget >= 0),
    budget_period   text,
    budget_reset_at timestamptz,
    spend           double precision NOT NULL DEFAULT 0,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE keys (
    id              text PRIMARY KEY,
    key_hash        bytea NOT NULL UNIQUE,          -- sha256 of the secret; the secret itself is never stored
    key_prefix      text NOT NULL,                  -- the first characters, to recognise a key in a list
    alias           text,
    team_id         text REFERENCES teams (id) ON DELETE RESTRICT,
    models          text[] NOT NULL DEFAULT '{}',
    rpm             integer CHECK (rpm >= 0),
    tpm             bigint CHECK (tpm >= 0),
    max_parallel    integer CHECK (max_parallel >= 0),
    budget          double precision CHECK (budget >= 0),
    budget_period   text,
    budget_reset_at timestamptz,
    spend           double precision NOT NULL DEFAULT 0,
    expires_at      timestamptz,
    revoked         boolean NOT NULL DEFAULT false,
    metadata        jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX keys_team_id ON keys (team_id);
CREATE INDEX keys_updated_at ON keys (updated_at);

-- Deleting a key or team keeps its spend history: no foreign keys here.
CREATE TABLE spend (
    day      date NOT NULL,
    key_id   text NOT NULL DEFAULT '',
    team_id  text NOT NULL DEFAULT '',
    model    text NOT NULL,
    requests bigint NOT NULL DEFAULT 0,
    prompt_tokens bigint NOT NULL DEFAULT 0,
    completion_tokens bigint NOT NULL DEFAULT 0,
    cost     double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (day, key_id, team_id, model)
);
