// Starts the wxbind binary in sandbox mode on a free port with a fresh database, for the
// contract and browser tests. WXBIND_BIN overrides the binary (default: the debug build).
import { spawn, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";

export const DEMO_PASSWORD = "demo-password-contract";

export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

const adminUrl = process.env.TEST_DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

/** Starts wxbind; `env` adds variables. Returns `{ base, stop }`. */
export async function startWxbind(env = {}) {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const dbName = `wxbind_contract_${randomBytes(6).toString("hex")}`;
  const dbUrl = new URL(adminUrl);
  dbUrl.pathname = `/${dbName}`;
  const bin =
    process.env.WXBIND_BIN ?? fileURLToPath(new URL("../../target/debug/wxbind", import.meta.url));
  const child = spawn(bin, ["serve"], {
    env: {
      PATH: process.env.PATH,
      DATABASE_URL: dbUrl.toString(),
      WXBIND_LISTEN: `127.0.0.1:${port}`,
      WXBIND_PUBLIC_URL: base,
      WXBIND_DEMO_PASSWORD: DEMO_PASSWORD,
      RUST_LOG: process.env.RUST_LOG ?? "warn",
      ...env,
    },
    stdio: ["ignore", "ignore", process.env.WXBIND_LOG ? "inherit" : "ignore"],
  });
  let exited = false;
  child.on("exit", () => (exited = true));
  for (let i = 0; i < 200; i++) {
    if (exited) throw new Error(`${bin} exited early (is it built? cargo build -p wxbind)`);
    try {
      const r = await fetch(`${base}/api/ready`);
      if (r.ok) break;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    base,
    async stop() {
      child.kill("SIGTERM");
      await new Promise((r) => (exited ? r() : child.on("exit", r)));
      try {
        execFileSync("psql", [adminUrl, "-qc", `DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`], {
          stdio: "ignore",
        });
      } catch {
        // best effort: a leftover test database does not affect other runs
      }
    },
  };
}
