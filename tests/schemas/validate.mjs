// Validates Kubernetes objects of the Gateway API against the schemas it publishes, as
// compiled by @kubernetes-models/gateway-api. Reads a JSON array of objects on stdin and
// prints a JSON array holding each object's errors (ajv's, empty when it is valid); exits
// 1 when any object has errors, or is of a kind that package has no schema for.
import { readFileSync } from "node:fs";

// gateway.networking.k8s.io/v1beta1, ReferenceGrant ->
// @kubernetes-models/gateway-api/_schemas/IoK8sSigsGatewayApiApisV1beta1ReferenceGrant
function schemaModule(apiVersion, kind) {
  const [group, version] = String(apiVersion).split("/");
  if (group !== "gateway.networking.k8s.io" || !/^v[0-9a-z]+$/.test(version ?? "")) {
    return null;
  }
  if (!/^[A-Z][A-Za-z]*$/.test(String(kind))) {
    return null;
  }
  const title = version[0].toUpperCase() + version.slice(1);
  return `@kubernetes-models/gateway-api/_schemas/IoK8sSigsGatewayApiApis${title}${kind}`;
}

async function errorsOf(doc) {
  const unknown = `no published schema for ${doc?.apiVersion} ${doc?.kind}`;
  const module = schemaModule(doc?.apiVersion, doc?.kind);
  if (module === null) {
    return [{ keyword: "schema", message: unknown }];
  }
  let validate;
  try {
    ({ validate } = await import(module));
  } catch (error) {
    return [{ keyword: "schema", message: `${unknown}: ${error.message}` }];
  }
  return validate(doc) ? [] : validate.errors;
}

const results = [];
for (const doc of JSON.parse(readFileSync(0, "utf8"))) {
  results.push(await errorsOf(doc));
}
process.stdout.write(`${JSON.stringify(results)}\n`);
process.exitCode = results.some((errors) => errors.length > 0) ? 1 : 0;
