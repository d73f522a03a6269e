-- Runs the Argo CD health check examples/argocd/otterdeployment-health.lua on OtterDeployment
-- status samples. Usage: lua5.4 tests/helm/health_test.lua <health.lua>   (also Lua 5.1 /
-- gopher-lua, Argo CD's interpreter). Prints one line per case and "N passed, M failed";
-- exits 1 on any failure.
local script = assert(arg[1], "usage: health_test.lua <health.lua>")

local function run(obj)
  -- A fresh environment per case, like Argo CD's per-call VM, with the object as global `obj`.
  local env = setmetatable({ obj = obj }, { __index = _G })
  local chunk, err
  if setfenv then -- Lua 5.1 / gopher-lua
    chunk, err = loadfile(script)
    if chunk then setfenv(chunk, env) end
  else
    chunk, err = loadfile(script, "t", env)
  end
  assert(chunk, err)
  return chunk()
end

local function cond(type_, status, reason, message)
  return { type = type_, status = status, reason = reason, message = message,
           observedGeneration = 3, lastTransitionTime = "2026-11-25T10:00:00Z" }
end
local function od(generation, status)
  return { apiVersion = "otter.dev/v1alpha1", kind = "OtterDeployment",
           metadata = { name = "otter", namespace = "default", generation = generation },
           spec = {}, status = status }
end
local function st(observed, ready, progressing, degraded, turn)
  local conditions = {} -- like a JSON array: no holes for absent conditions
  for _, c in pairs({ ready, progressing, degraded, turn }) do conditions[#conditions + 1] = c end
  return { observedGeneration = observed, conditions = conditions,
           signaling = { desired = 2, ready = 2 } }
end

local cases = {
  { "no status yet", od(1, nil), "Progressing", "otter-operator" },
  { "status without conditions", od(1, { observedGeneration = 1, conditions = {} }), "Progressing", nil },
  { "ready and current", od(3, st(3,
      cond("Ready", "True", "Available", "signaling 2/2, TURN 2/2, 4 TURN URIs"),
      cond("Progressing", "False", "RolloutComplete", "all components at the desired state"),
      cond("Degraded", "False", "AsExpected", "no problem found"))),
    "Healthy", "Available: signaling 2/2" },
  { "ready but for an older generation (spec just changed)", od(4, st(3,
      cond("Ready", "True", "Available", "ok"),
      cond("Progressing", "False", "RolloutComplete", ""),
      cond("Degraded", "False", "AsExpected", ""))),
    "Progressing", "generation 4" },
  { "status without observedGeneration", od(2, { conditions = {
      cond("Ready", "True", "Available", "ok") } }), "Progressing", "generation 2" },
  { "creating", od(3, st(3,
      cond("Ready", "False", "Creating", "waiting for signaling 0/2"),
      cond("Progressing", "True", "RollingOut", "waiting for signaling 0/2"),
      cond("Degraded", "False", "AsExpected", ""))),
    "Progressing", "RollingOut: waiting for signaling 0/2" },
  { "rolling out while still ready", od(3, st(3,
      cond("Ready", "True", "Available", "signaling 2/2"),
      cond("Progressing", "True", "RollingOut", "waiting for TURN 1/2"),
      cond("Degraded", "False", "AsExpected", ""))),
    "Healthy", "Available" },
  { "no TURN nodes", od(3, st(3,
      cond("Ready", "False", "NoTurnNodes", "no Ready node matches turn.nodeSelector"),
      cond("Progressing", "False", "RolloutComplete", ""),
      cond("Degraded", "True", "NoTurnNodes", "no Ready node matches turn.nodeSelector"))),
    "Degraded", "NoTurnNodes: no Ready node" },
  { "missing secret while progressing", od(3, st(3,
      cond("Ready", "False", "SecretNotFound", "secret calls/turn not found"),
      cond("Progressing", "True", "RollingOut", "waiting for signaling 1/2"),
      cond("Degraded", "True", "SecretNotFound", "secret calls/turn not found"))),
    "Degraded", "SecretNotFound" },
  { "apply failed", od(3, st(3,
      cond("Ready", "False", "ApplyFailed", "admission webhook denied"),
      nil,
      cond("Degraded", "True", "ApplyFailed", "admission webhook denied"))),
    "Degraded", "ApplyFailed" },
  { "scaled to zero", od(3, st(3,
      cond("Ready", "False", "ScaledToZero", "signaling.replicas is 0"),
      cond("Progressing", "False", "RolloutComplete", ""),
      cond("Degraded", "False", "AsExpected", ""))),
    "Suspended", "ScaledToZero" },
  { "rolled out, nothing serving", od(3, st(3,
      cond("Ready", "False", "NotServing", "no ready pods"),
      cond("Progressing", "False", "RolloutComplete", ""),
      cond("Degraded", "False", "AsExpected", ""))),
    "Degraded", "NotServing: no ready pods" },
  { "degraded status of an older generation", od(5, st(3,
      cond("Ready", "False", "NoTurnNodes", "x"), nil, cond("Degraded", "True", "NoTurnNodes", "x"))),
    "Progressing", "generation 5" },
  { "one TURN node does not allocate: still serving, and said", od(3, st(3,
      cond("Ready", "True", "Available", "signaling 2/2, TURN 2/2"),
      cond("Progressing", "False", "RolloutComplete", ""),
      cond("Degraded", "False", "AsExpected", ""),
      cond("TurnReachable", "False", "TurnUnreachable", "1 of 2 TURN nodes do not allocate a relay"))),
    "Healthy", "TurnUnreachable: 1 of 2 TURN nodes" },
  { "every TURN node allocates", od(3, st(3,
      cond("Ready", "True", "Available", "signaling 2/2, TURN 2/2"),
      cond("Progressing", "False", "RolloutComplete", ""),
      cond("Degraded", "False", "AsExpected", ""),
      cond("TurnReachable", "True", "TurnAllocated", "every TURN node allocated a relay"))),
    "Healthy", "Available: signaling 2/2, TURN 2/2" },
  { "no TURN node allocates: TurnReachable does not decide health, it is said", od(3, st(3,
      cond("Ready", "True", "Available", "signaling 2/2, TURN 2/2"),
      cond("Progressing", "False", "RolloutComplete", ""),
      cond("Degraded", "False", "AsExpected", ""),
      cond("TurnReachable", "False", "TurnUnreachable", "2 of 2 TURN nodes do not allocate a relay"))),
    "Healthy", "TurnUnreachable: 2 of 2 TURN nodes" },
  { "unknown Ready reason", od(3, st(3, cond("Ready", "Unknown", "Whatever", ""), nil, nil)),
    "Progressing", "Whatever" },
}

local passed, failed = 0, 0
for _, c in ipairs(cases) do
  local name, obj, want, want_msg = c[1], c[2], c[3], c[4]
  local ok, hs = pcall(run, obj)
  local problem
  if not ok then
    problem = "error: " .. tostring(hs)
  elseif type(hs) ~= "table" then
    problem = "returned " .. type(hs)
  elseif hs.status ~= want then
    problem = "status " .. tostring(hs.status) .. ", want " .. want .. " (" .. tostring(hs.message) .. ")"
  elseif type(hs.message) ~= "string" or hs.message == "" then
    problem = "no message"
  elseif want_msg ~= nil and not string.find(hs.message, want_msg, 1, true) then
    problem = "message " .. string.format("%q", hs.message) .. " lacks " .. string.format("%q", want_msg)
  end
  if problem then
    failed = failed + 1
    print("FAIL " .. name .. ": " .. problem)
  else
    passed = passed + 1
    print("ok   " .. name .. " -> " .. hs.status .. " (" .. hs.message .. ")")
  end
end
print(passed .. " passed, " .. failed .. " failed")
if failed > 0 then os.exit(1) end
