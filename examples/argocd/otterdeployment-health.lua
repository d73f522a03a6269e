-- Argo CD health check for otter.dev/OtterDeployment (argocd-cm key
-- resource.customizations.health.otter.dev_OtterDeployment; see docs/install.md).
-- Argo CD runs it with gopher-lua (Lua 5.1) and the live object in `obj`; it must also run on
-- Lua 5.4, where tests/helm/test checks it. Maps the operator's kstatus-style conditions:
--   status missing, or written for an older generation  -> Progressing
--   Degraded=True                                       -> Degraded
--   Ready=True                                          -> Healthy (TURN nodes that do not
--                                                          allocate, TurnReachable=False, are
--                                                          named in the message)
--   Progressing=True                                    -> Progressing
--   Ready=False reason ScaledToZero                     -> Suspended (replicas set to 0 on purpose)
--   Ready=False reason NotServing                       -> Degraded (rolled out, yet no ready pods)
--   anything else                                       -> Progressing
local hs = {}

local function find(conditions, type_)
  for _, c in ipairs(conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function describe(c, fallback)
  if c == nil then
    return fallback
  end
  local text = c.reason or fallback
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  return text
end

local generation = obj.metadata and obj.metadata.generation
local status = obj.status
if status == nil or status.conditions == nil or #status.conditions == 0 then
  hs.status = "Progressing"
  hs.message = "Waiting for the otter-operator to report status"
  return hs
end
if generation ~= nil and (status.observedGeneration == nil or status.observedGeneration < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the otter-operator to observe generation " .. tostring(generation)
  return hs
end

local ready = find(status.conditions, "Ready")
local progressing = find(status.conditions, "Progressing")
local degraded = find(status.conditions, "Degraded")
local turn = find(status.conditions, "TurnReachable")

if degraded ~= nil and degraded.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(degraded, "Degraded")
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready, "Ready")
  if turn ~= nil and turn.status == "False" then
    hs.message = hs.message .. "; " .. describe(turn, "TurnUnreachable")
  end
elseif progressing ~= nil and progressing.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(progressing, "Progressing")
elseif ready ~= nil and ready.reason == "ScaledToZero" then
  hs.status = "Suspended"
  hs.message = describe(ready, "ScaledToZero")
elseif ready ~= nil and ready.reason == "NotServing" then
  hs.status = "Degraded"
  hs.message = describe(ready, "NotServing")
else
  hs.status = "Progressing"
  hs.message = describe(ready, "Waiting for the Ready condition")
end
return hs
