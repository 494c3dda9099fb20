// Verify a ckanext-webhooks delivery in Node.js with the built-in crypto.
//
// Usage (tested by the project's test suite):
//   node receive.js SECRET < request.json
// where request.json is {"headers": {...}, "body": "<raw body>"}.
const crypto = require("crypto");

const TOLERANCE = 5 * 60; // seconds; refuse replays of old messages

function verify(secret, headers, body) {
  const h = {};
  for (const [k, v] of Object.entries(headers)) h[k.toLowerCase()] = v;
  const id = h["webhook-id"];
  const timestamp = h["webhook-timestamp"];
  if (Math.abs(Date.now() / 1000 - Number(timestamp)) > TOLERANCE) {
    throw new Error("timestamp too old or too new");
  }
  const key = Buffer.from(secret.replace(/^whsec_/, ""), "base64");
  const expected = crypto
    .createHmac("sha256", key)
    .update(`${id}.${timestamp}.${body}`)
    .digest();
  // during a secret rotation there are two signatures, space separated
  for (const signature of h["webhook-signature"].split(" ")) {
    const [version, value] = signature.split(",");
    const given = Buffer.from(value || "", "base64");
    if (version === "v1" && given.length === expected.length &&
        crypto.timingSafeEqual(given, expected)) {
      return JSON.parse(body);
    }
  }
  throw new Error("no valid signature");
}

let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const request = JSON.parse(input);
  const payload = verify(process.argv[2], request.headers, request.body);
  console.log("OK", payload.type, payload.id);
});
