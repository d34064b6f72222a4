-- Runs an Argo CD health script the way Argo CD does: the resource is the global `obj`, the script's
-- chunk returns a table {status=..., message=...}. Usage: lua5.4 harness.lua <object.lua> <script.lua>
-- where <object.lua> is a chunk returning the resource as a Lua table.
obj = dofile(arg[1])
local hs = dofile(arg[2])
assert(type(hs) == "table", "health script did not return a table")
io.write(tostring(hs.status), "\n", tostring(hs.message or ""), "\n")
