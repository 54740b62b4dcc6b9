// Validates responses against ../openapi/openapi.json with Ajv (JSON Schema 2020-12, the
// dialect of OpenAPI 3.1), and records which (method, path, status) the tests saw.
import { readFileSync } from "node:fs";
import Ajv2020 from "ajv/dist/2020.js";
import addFormats from "ajv-formats";

export const spec = JSON.parse(
  readFileSync(new URL("../../openapi/openapi.json", import.meta.url), "utf8"),
);

const ajv = new Ajv2020({ strict: false, allErrors: true });
addFormats(ajv);
// Register the whole document so `#/components/schemas/...` references resolve.
ajv.addSchema({ $id: "openapi.json", $defs: {}, components: spec.components }, "openapi.json");

const templates = Object.keys(spec.paths).map((template) => ({
  template,
  regex: new RegExp(`^${template.replace(/\{[^}]+\}/g, "[^/]+")}$`),
}));

/** The spec's path template for a concrete path. */
export function templateOf(path) {
  return templates.find((t) => t.regex.test(path))?.template;
}

/** Every (method, template, status) a test saw. */
export const seen = new Set();

function rewriteRefs(schema) {
  return JSON.parse(
    JSON.stringify(schema).replaceAll('"$ref":"#/components/', '"$ref":"openapi.json#/components/'),
  );
}

/**
 * Asserts that `response` (already read into `body`) is documented for this operation and,
 * for JSON, matches the documented schema. Returns nothing; throws a descriptive error.
 */
export function assertDocumented(method, url, response, body) {
  const path = new URL(url).pathname;
  const template = templateOf(path);
  if (!template) throw new Error(`${method} ${path}: no such path in the spec`);
  const operation = spec.paths[template][method.toLowerCase()];
  if (!operation) throw new Error(`${method} ${template}: method not in the spec`);
  const status = String(response.status);
  const documented = operation.responses[status];
  if (!documented) {
    throw new Error(`${method} ${template} answered ${status}, which the spec does not document`);
  }
  seen.add(`${method.toUpperCase()} ${template} ${status}`);
  const contentType = response.headers.get("content-type") ?? "";
  const media = documented.content?.["application/json"];
  if (!media) return;
  if (!contentType.includes("application/json")) {
    throw new Error(`${method} ${template} ${status}: expected JSON, got ${contentType}`);
  }
  const validate = ajv.compile(rewriteRefs(media.schema));
  if (!validate(body)) {
    throw new Error(
      `${method} ${template} ${status}: body does not match the spec: ${ajv.errorsText(validate.errors)}\n${JSON.stringify(body)}`,
    );
  }
}

/** Every (method, template, status) the spec documents. */
export function documentedResponses() {
  const all = [];
  for (const [template, item] of Object.entries(spec.paths)) {
    for (const [method, op] of Object.entries(item)) {
      for (const status of Object.keys(op.responses ?? {})) {
        all.push(`${method.toUpperCase()} ${template} ${status}`);
      }
    }
  }
  return all;
}
