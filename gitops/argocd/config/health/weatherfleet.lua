-- Argo CD health check for weatherfleet's resources: argocd-cm carries this one script under the keys
-- resource.customizations.health.weatherfleet.io_{WeatherSensor,SensorFleet,FirmwareRelease}. It reads
-- what the operator writes into every status (observedGeneration; conditions, Ready among them) and the
-- status fields only one kind has where they are set (a fleet's rollout, a release's digest).
--   Progressing: no status yet, status for an older generation, and every state the operator is still
--     working towards (a certificate not issued yet, broker credentials pending, a release waiting for its
--     signature check, an artifact not pushed yet, a per-device release without devices yet).
--   Degraded: a fleet's rollout halted, or a condition False for a terminal reason (below), e.g. a board
--     that refused its desired configuration, a bad signature.
--   Healthy: otherwise Ready=True (a rollout in progress, paused, aborted or rolled back on request is a
--     normal state of a healthy fleet: the message says which); without a Ready condition, every
--     condition True.
-- Reasons of a False condition that waiting will not fix: a person must change the spec, the artifact or
-- the configuration. Only these make a resource Degraded; every other False or Unknown condition is a
-- state the operator is still working towards (a release waiting for its signature check, an artifact
-- not pushed yet, a registry that does not answer, a certificate not issued yet): Progressing.
-- The contract with the operator (a test checks each reason is one the operator writes).
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

-- Ready=True with this reason: a per-device release that some devices can have. The operator already
-- weighed the others' failures (terminal ones among them, listed in the message) and excludes exactly
-- those devices from the rollout, so the release is Healthy.
local PARTIALLY_AVAILABLE = "PartiallyAvailable"

-- The conditions whose message says what a resource that is not Ready waits for; the first one that is
-- not True answers. Ready's message names it for sensors and fleets; a release's Ready only says "not
-- resolved", its Resolved and SignatureVerified conditions say why.
local explained_by = { FirmwareRelease = { "Resolved", "SignatureVerified", "Ready" } }

local function find(conditions, kind)
  for _, c in ipairs(conditions) do
    if c.type == kind then return c end
  end
  return nil
end

-- The first condition that is False for a terminal reason, if any.
local function terminal_failure(conditions)
  for _, c in ipairs(conditions) do
    if c.status == "False" and c.reason ~= nil and terminal[c.reason] then return c end
  end
  return nil
end

local function all_true(conditions)
  for _, c in ipairs(conditions) do
    if c.status ~= "True" then return false end
  end
  return #conditions > 0
end

local function describe(c)
  return c.type .. " " .. (c.reason or "") .. ": " .. (c.message or "")
end

local status = obj.status

-- Healthy, with the condition's message and what the status adds: the digest a release resolved to, the
-- phase of a fleet's rollout that is not idle.
local function healthy(c)
  local parts = {}
  if c.message ~= nil and c.message ~= "" then table.insert(parts, c.message) end
  if status.digest ~= nil then table.insert(parts, "resolved to " .. status.digest) end
  local rollout = status.rollout
  if rollout ~= nil and rollout.phase ~= nil and rollout.phase ~= "Idle" then
    local phase = "rollout " .. rollout.phase
    if rollout.reason ~= nil and rollout.reason ~= "" then phase = phase .. ": " .. rollout.reason end
    table.insert(parts, phase)
  end
  if #parts == 0 then table.insert(parts, describe(c)) end
  return { status = "Healthy", message = table.concat(parts, "; ") }
end

local hs = { status = "Progressing", message = "Waiting for the operator to report status" }
if status == nil then return hs end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local rollout = status.rollout
if rollout ~= nil and rollout.phase == "Halted" then
  local what = rollout.version or rollout.release or "release"
  return { status = "Degraded", message = "Rollout of " .. what .. " halted: " .. (rollout.reason or "") }
end

local conditions = status.conditions
if conditions == nil then return hs end
local ready = find(conditions, "Ready")
if ready ~= nil and ready.status == "True" and ready.reason == PARTIALLY_AVAILABLE then return healthy(ready) end
local failed = terminal_failure(conditions)
if failed ~= nil then return { status = "Degraded", message = describe(failed) } end
if ready ~= nil and ready.status == "True" then return healthy(ready) end
if ready == nil and all_true(conditions) then return healthy(conditions[#conditions]) end

for _, kind in ipairs(explained_by[obj.kind] or { "Ready" }) do
  local c = find(conditions, kind)
  if c ~= nil and c.status ~= "True" then
    hs.message = describe(c)
    break
  end
end
return hs
