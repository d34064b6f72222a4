// Run a script under the real MicroPython interpreter (WebAssembly port on Node).
//
//   node run_mpy.mjs [--heap BYTES] [--mount HOSTDIR:MPDIR]... [--cwd MPDIR] SCRIPT
//
// Every file under each HOSTDIR is copied into the interpreter's in-memory filesystem at MPDIR; the
// working directory becomes --cwd (default: the first mount) and is put first on sys.path, as the
// board's root is. The script's stdout/stderr are passed through; the exit status is 0 when the script
// ran to the end, the SystemExit code when it raised SystemExit, and 1 on any other exception (after
// printing the MicroPython traceback to stderr).
import fs from "node:fs";
import path from "node:path";
const here = path.dirname(new URL(import.meta.url).pathname);
const pkg = path.resolve(here, "../../node_modules/@micropython/micropython-webassembly-pyscript/micropython.mjs");
const { loadMicroPython } = await import(pkg);

const args = process.argv.slice(2);
let heap = 1024 * 1024;
const mounts = [];
let cwd = null;
let script = null;
for (let i = 0; i < args.length; i++) {
  if (args[i] === "--heap") heap = parseInt(args[++i], 10);
  else if (args[i] === "--mount") mounts.push(args[++i]);
  else if (args[i] === "--cwd") cwd = args[++i];
  else script = args[i];
}
if (!script) {
  console.error("usage: run_mpy.mjs [--heap BYTES] [--mount HOST:MP]... [--cwd MP] SCRIPT");
  process.exit(2);
}

const mp = await loadMicroPython({
  heapsize: heap,
  stdout: (line) => process.stdout.write(line + "\n"),
  stderr: (line) => process.stderr.write(line + "\n"),
});

function mkdirs(p) {
  let cur = "";
  for (const part of p.split("/").filter(Boolean)) {
    cur += "/" + part;
    try { mp.FS.mkdir(cur); } catch (e) { /* exists */ }
  }
}
function copyTree(hostDir, mpDir) {
  mkdirs(mpDir);
  for (const entry of fs.readdirSync(hostDir, { withFileTypes: true })) {
    const src = path.join(hostDir, entry.name);
    const dst = mpDir.replace(/\/$/, "") + "/" + entry.name;
    if (entry.isDirectory()) {
      if (entry.name === "__pycache__") continue;
      copyTree(src, dst);
    } else if (entry.isFile()) {
      mp.FS.writeFile(dst, fs.readFileSync(src));
    }
  }
}
for (const m of mounts) {
  const idx = m.lastIndexOf(":");
  const host = m.slice(0, idx), target = m.slice(idx + 1);
  copyTree(host, target);
  if (cwd === null) cwd = target;
}
cwd = cwd || "/";
mkdirs(cwd);
mp.FS.writeFile("/__script__.py", fs.readFileSync(script));

const wrapper = `
import sys, os
os.chdir(${JSON.stringify(cwd)})
if '' in sys.path: sys.path.remove('')
sys.path.insert(0, '')
__rc = 0
try:
    __g = {'__name__': '__main__'}
    with open('/__script__.py') as __f:
        __src = __f.read()
    exec(compile(__src, ${JSON.stringify(path.basename(script))}, 'exec'), __g)
except SystemExit as __e:
    __rc = __e.args[0] if __e.args else 0
    if __rc is None: __rc = 0
except BaseException as __e:
    sys.print_exception(__e, sys.stderr)
    __rc = 1
`;
// Optional stepping: if the script defined __step__(), call it from here again and again (each call a
// fresh runPython) until it returns a false value. The WebAssembly port's gc.collect() cannot reclaim
// objects while a runPython call is on the stack (stale pointers on the C stack pin them); at the start of
// each step the stack is shallow, so gc.collect() there measures the live heap faithfully.
const stepper = `
__more = False
if __rc == 0 and '__step__' in __g:
    try:
        __more = bool(__g['__step__']())
    except SystemExit as __e:
        __rc = __e.args[0] if __e.args else 0
    except BaseException as __e:
        sys.print_exception(__e, sys.stderr)
        __rc = 1
`;
let rc = 0;
try {
  mp.runPython(wrapper);
  do {
    mp.runPython(stepper);
  } while (mp.globals.get("__more"));
  rc = mp.globals.get("__rc");
} catch (e) {
  process.stderr.write("runner: " + (e && e.message ? e.message : String(e)) + "\n");
  rc = 3;
}
process.exit(typeof rc === "number" ? rc : 1);
