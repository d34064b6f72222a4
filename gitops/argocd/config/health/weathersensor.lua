-- Argo CD health check for weatherfleet.io/WeatherSensor (resource.customizations.health).
-- Degraded: a condition is False for a terminal reason (below), e.g. the board refused its desired
-- configuration. Healthy: otherwise Ready=True. Progressing: everything else — no status yet, status for
-- an older generation, a certificate not issued yet, broker credentials pending, no fleet selecting the
-- sensor (yet).
-- Reasons of a False condition that waiting will not fix: a person must change the spec, the artifact or
-- the configuration. Only these make a resource Degraded; every other False or Unknown condition is a
-- state the operator is still working towards (a release waiting for its signature check, an artifact
-- not pushed yet, a registry that does not answer, a certificate not issued yet): Progressing.
-- The contract with the operator; keep the list equal in the three scripts (a test compares them, and
-- checks each reason is one the operator writes).
local terminal = {
  InvalidSpec = true,             -- the spec fails the operator's validation
  VersionMismatch = true,         -- the artifact is annotated with another version than spec.version
  SignatureInvalid = true,        -- the signature does not verify with the configured key
  SignatureMissing = true,        -- the resolved artifact has no signature
  PublicKeyMissing = true,        -- publicKeyRef names a ConfigMap key that does not exist
  PublicKeyInvalid = true,        -- the key there is no PEM public key
  RegistryRefused = true,         -- the registry refuses the request (credentials, repository name)
  TooLarge = true,                -- the broker configuration exceeds the 1 MiB object limit
  FailureThresholdReached = true, -- the rollout halted on failures
  OlderThanStable = true,         -- the release is older than the fleet's stable one (rollback is explicit)
  Rejected = true,                -- the board refused its desired configuration
}

local function find(conditions, kind)
  for _, c in ipairs(conditions or {}) do
    if c.type == kind then return c end
  end
  return nil
end

-- The first condition that is False for a terminal reason, if any.
local function terminal_failure(conditions)
  for _, c in ipairs(conditions or {}) do
    if c.status == "False" and c.reason ~= nil and terminal[c.reason] then return c end
  end
  return nil
end

local function describe(c)
  return c.type .. " " .. (c.reason or "") .. ": " .. (c.message or "")
end

local hs = { status = "Progressing", message = "Waiting for the operator to report status" }
local status = obj.status
if status == nil or status.conditions == nil then return hs end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local failed = terminal_failure(status.conditions)
if failed ~= nil then
  hs.status = "Degraded"
  hs.message = describe(failed)
  return hs
end
local ready = find(status.conditions, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ""
  return hs
end
if ready ~= nil then hs.message = describe(ready) end  -- Ready's message names what it waits for
return hs
