-- Argo CD health check for weatherfleet.io/FirmwareRelease (resource.customizations.health).
-- Healthy: Ready=True (for a per-device release also when only some devices can have it; the message
-- says so). Degraded: a condition is False for a terminal reason (below): a bad signature, a wrong key,
-- a version mismatch, a refusing registry. Progressing: everything else — not resolved yet, the artifact
-- not pushed yet, the registry unreachable, the signature not checked yet, a per-device release whose
-- devices do not exist yet or whose artifacts are checked where they are served.
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

local hs = { status = "Progressing", message = "Waiting for the operator to resolve the artifact" }
local status = obj.status
if status == nil or status.conditions == nil then return hs end

local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration < generation then
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local ready = find(status.conditions, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = (status.digest and ("Resolved to " .. status.digest)) or (ready.message or "")
  if ready.reason ~= nil and ready.reason ~= "Ready" then hs.message = ready.message or "" end
  return hs
end
local failed = terminal_failure(status.conditions)
if failed ~= nil then
  hs.status = "Degraded"
  hs.message = describe(failed)
  return hs
end
local resolved = find(status.conditions, "Resolved")
local verified = find(status.conditions, "SignatureVerified")
if ready == nil and resolved ~= nil and resolved.status == "True" and verified ~= nil and verified.status == "True" then
  hs.status = "Healthy"
  hs.message = (status.digest and ("Resolved to " .. status.digest)) or (resolved.message or "")
  return hs
end
local waiting = nil
for _, c in ipairs({ resolved, verified, ready }) do
  if c ~= nil and c.status ~= "True" then waiting = c break end
end
if waiting ~= nil then hs.message = describe(waiting) end
return hs
