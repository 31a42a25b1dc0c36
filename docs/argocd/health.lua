-- Argo CD health check for pgquartz.io/PgQuartzJob.
-- Install it under `resource.customizations.health.pgquartz.io_PgQuartzJob` in argocd-cm
-- (see docs/argocd.md). It reads only the status the operator writes: the Ready and
-- LastRunSucceeded conditions and observedGeneration.
local hs = {}

local function condition(conditions, type_)
  if conditions == nil then
    return nil
  end
  for _, c in ipairs(conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the pgquartz operator"
  return hs
end

local generation = obj.metadata.generation or 0
local observed = obj.status.observedGeneration or 0
if observed < generation then
  hs.status = "Progressing"
  hs.message = "The pgquartz operator has not handled the latest change yet"
  return hs
end

local ready = condition(obj.status.conditions, "Ready")
if ready == nil or ready.status == "Unknown" then
  hs.status = "Progressing"
  hs.message = (ready and ready.message) or "Waiting for the pgquartz operator"
  return hs
end
if ready.status == "False" and ready.reason == "MissingReference" then
  -- Waiting for a Secret or ConfigMap (often synced in a later wave, or by another controller).
  hs.status = "Progressing"
  hs.message = ready.message
  return hs
end
if ready.status == "False" then
  hs.status = "Degraded"
  hs.message = ready.message
  return hs
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "The schedule is suspended"
  return hs
end

local last = condition(obj.status.conditions, "LastRunSucceeded")
if last ~= nil and last.status == "False" then
  hs.status = "Degraded"
  hs.message = "Last run failed: " .. (last.message or last.reason or "")
  return hs
end

hs.status = "Healthy"
if last == nil then
  hs.message = "Scheduled; no run has finished yet"
else
  hs.message = last.message or "Last run succeeded"
end
return hs
