-- Argo CD health check for kmod.dev/ModuleRequest (argocd-cm key
-- resource.customizations.health.kmod.dev_ModuleRequest).
-- Healthy: every targeted node loaded the module (removed it, for spec.action
-- Remove). Degraded: a node failed (the
-- message names it, its reason and the helper's message). Progressing: the
-- controller has not yet seen this generation, runs are outstanding, no node
-- matches yet, or the request is being deleted.
local hs = { status = "Progressing", message = "waiting for the kmod-operator controller" }
local meta = obj.metadata or {}
local st = obj.status
if meta.deletionTimestamp ~= nil then
  hs.message = "being deleted"
  if st ~= nil and st.counts ~= nil then
    local outstanding = (st.counts.pending or 0) + (st.counts.running or 0)
    hs.message = "being deleted; " .. outstanding .. " run(s) outstanding"
  end
  return hs
end
if st == nil then
  return hs
end
local gen = meta.generation or 1
if st.observedGeneration == nil or st.observedGeneration ~= gen then
  hs.message = "waiting for the controller to observe generation " .. gen
  return hs
end
-- Conditions computed for an older generation say nothing about this one.
local cond = {}
for _, c in ipairs(st.conditions or {}) do
  if c.observedGeneration == nil or c.observedGeneration == gen then
    cond[c.type] = c
  end
end
local function is(t)
  return cond[t] ~= nil and cond[t].status == "True"
end
if is("Stalled") or is("Failed") or st.phase == "Failed" then
  hs.status = "Degraded"
  local c = cond["Stalled"] or cond["Failed"]
  hs.message = (c ~= nil and c.message) or "a node failed"
  return hs
end
if is("Ready") or is("Succeeded") then
  hs.status = "Healthy"
  hs.message = (cond["Ready"] or cond["Succeeded"]).message
  return hs
end
local c = cond["Reconciling"] or cond["Succeeded"]
if c ~= nil and c.message ~= nil then
  hs.message = c.message
end
return hs
