// Fails when the committed generated types differ from a fresh generation.
import { readFileSync, rmSync } from "node:fs";

const [committed, fresh] = process.argv.slice(2);
const a = readFileSync(committed, "utf8");
const b = readFileSync(fresh, "utf8");
rmSync(fresh);
if (a !== b) {
  console.error(`${committed} is out of date with ../openapi/openapi.json: run \`npm run generate\` and commit it.`);
  process.exit(1);
}
console.log(`${committed} matches ../openapi/openapi.json`);
