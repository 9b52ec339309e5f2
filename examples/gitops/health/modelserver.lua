-- Argo CD health check for loraplane.io/ModelServer (resource.customizations.health.loraplane.io_ModelServer).
-- Reads the controller's standard conditions; only conditions computed for the current generation count,
-- so a fresh commit shows Progressing until the operator has acted on it.
local hs = { status = "Progressing", message = "Waiting for the operator" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= nil and obj.status.observedGeneration < generation then
  hs.message = "Waiting for the operator to act on generation " .. generation
  return hs
end
local conditions = {}
for _, condition in ipairs(obj.status.conditions) do
  if generation == nil or condition.observedGeneration == nil or condition.observedGeneration == generation then
    conditions[condition.type] = condition
  end
end
local function text(condition)
  local reason = condition.reason or ""
  if condition.message ~= nil and condition.message ~= "" then
    return reason .. ": " .. condition.message
  end
  return reason
end
local degraded, ready, progressing = conditions["Degraded"], conditions["Ready"], conditions["Progressing"]
if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = text(degraded)
  return hs
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = obj.status.adapterSummary or text(ready)
  return hs
end
if ready ~= nil and ready.reason == "ScaledToZero" then
  hs.status = "Suspended"
  hs.message = text(ready)
  return hs
end
if progressing ~= nil and progressing.status == "True" then
  hs.message = text(progressing)
elseif ready ~= nil then
  hs.message = text(ready)
end
return hs
