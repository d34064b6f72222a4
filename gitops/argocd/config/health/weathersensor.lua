-- Argo CD health check for weatherfleet.io/WeatherSensor (resource.customizations.health).
-- Healthy: Ready=True. Degraded: Ready=False and the reason (of Ready, or of another False condition)
-- is terminal, i.e. waiting will not fix it. Progressing: everything else, including a status the
-- operator has not written yet or written for an older generation.
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

local hs = { status = "Progressing", message = "Waiting for the operator to report status" }
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
  hs.message = ready.message or ""
  return hs
end
if ready ~= nil and ready.status == "False" then
  local failed = terminal[ready.reason or ""] and ready or terminal_failure(status.conditions)
  if failed ~= nil then
    hs.status = "Degraded"
    hs.message = failed.type .. " " .. (failed.reason or "") .. ": " .. (failed.message or "")
    return hs
  end
  hs.message = (ready.reason or "NotReady") .. ": " .. (ready.message or "")
end
return hs
