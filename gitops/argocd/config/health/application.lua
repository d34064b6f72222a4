-- Health of Argo CD Applications themselves, so that the app-of-apps waits for each wave's child
-- Application to become healthy before it syncs the next wave (Argo CD stopped assessing Application
-- health by default in 1.8; this restores it).
local hs = { status = "Progressing", message = "" }
if obj.status ~= nil and obj.status.health ~= nil then
  hs.status = obj.status.health.status
  if obj.status.health.message ~= nil then
    hs.message = obj.status.health.message
  end
end
return hs
