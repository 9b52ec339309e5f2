-- Argo CD health check for loraplane.io/FineTuneJob (resource.customizations.health.loraplane.io_FineTuneJob).
-- A run is Healthy once it succeeded and passed its evaluation gate; a run that failed, or whose adapter
-- failed the gate (it will never be served), is Degraded; a suspended run is Suspended.
local hs = { status = "Progressing", message = "Waiting for the operator" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local conditions = {}
for _, condition in ipairs(obj.status.conditions) do
  conditions[condition.type] = condition
end
local function text(condition)
  local reason = condition.reason or ""
  if condition.message ~= nil and condition.message ~= "" then
    return reason .. ": " .. condition.message
  end
  return reason
end
local failed, succeeded = conditions["Failed"], conditions["Succeeded"]
local gate, running = conditions["EvaluationPassed"], conditions["Running"]
if failed ~= nil and failed.status == "True" then
  hs.status = "Degraded"
  hs.message = text(failed)
  return hs
end
if succeeded ~= nil and succeeded.status == "True" then
  if gate ~= nil and gate.status == "False" then
    hs.status = "Degraded"
    hs.message = text(gate)
    return hs
  end
  hs.status = "Healthy"
  hs.message = text(succeeded)
  return hs
end
if running ~= nil and running.reason == "Suspended" then
  hs.status = "Suspended"
  hs.message = text(running)
  return hs
end
local phase = obj.status.phase or "Pending"
hs.message = phase
if obj.status.progress ~= nil and obj.status.progress.summary ~= nil and obj.status.progress.summary ~= "" then
  hs.message = phase .. " " .. obj.status.progress.summary
end
if running ~= nil and running.message ~= nil and running.message ~= "" then
  hs.message = hs.message .. " (" .. text(running) .. ")"
end
return hs
