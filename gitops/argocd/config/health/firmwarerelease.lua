-- Argo CD health check for weatherfleet.io/FirmwareRelease (resource.customizations.health).
-- Healthy: Ready=True, or (without a Ready condition) Resolved=True and SignatureVerified=True.
-- Degraded: a condition is False with a terminal reason (tag missing, signature wrong, ...): the
-- artifact will not become usable by waiting. Progressing: everything else (registry unreachable,
-- not yet resolved, status for an older generation).
-- Terminal reasons are the contract with the operator; keep the list equal in the three scripts.
local terminal = {
  Invalid = true, InvalidSpec = true, SpecInvalid = true, ValidationFailed = true,
  InvalidReference = true, ReferenceNotFound = true, NotFound = true, IssuerNotFound = true,
  TagNotFound = true, ArtifactNotFound = true, ManifestNotFound = true, DigestMismatch = true,
  SignatureInvalid = true, SignatureMismatch = true, SignatureMissing = true, SignatureNotVerified = true,
  Unsigned = true, CertificateFailed = true, BrokerConfigTooLarge = true, FailureThresholdReached = true,
  Halted = true,
}

local function find(conditions, kind)
  for _, c in ipairs(conditions or {}) do
    if c.type == kind then return c end
  end
  return nil
end

local function terminal_failure(conditions)
  for _, c in ipairs(conditions or {}) do
    if c.status == "False" and c.reason ~= nil and terminal[c.reason] then return c end
  end
  return nil
end

local hs = { status = "Progressing", message = "Waiting for the operator to resolve the artifact" }
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
  hs.message = failed.type .. " " .. (failed.reason or "") .. ": " .. (failed.message or "")
  return hs
end

local ready = find(status.conditions, "Ready")
local resolved = find(status.conditions, "Resolved")
local verified = find(status.conditions, "SignatureVerified")
if (ready ~= nil and ready.status == "True")
    or (ready == nil and resolved ~= nil and resolved.status == "True"
        and verified ~= nil and verified.status == "True") then
  hs.status = "Healthy"
  hs.message = (status.digest and ("Resolved to " .. status.digest)) or ((ready and ready.message) or "")
  return hs
end
local pending = ready or resolved or verified
if pending ~= nil then
  hs.message = pending.type .. " " .. (pending.reason or "") .. ": " .. (pending.message or "")
end
return hs
