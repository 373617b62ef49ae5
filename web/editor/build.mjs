// Bundles src/editor.js into one minified IIFE file and collects the licence
// texts of every package that ends up in it. Run by scripts/build-editor
// (after `npm ci`); arguments: the output file, e.g.
// ../../crates/nimbus-web/assets/editor.js. Writes <output> and
// <output>.LICENSE.txt.
import { build } from "esbuild";
import { existsSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";

const here = dirname(new URL(import.meta.url).pathname);
const outfile = resolve(process.argv[2] || join(here, "../../crates/nimbus-web/assets/editor.js"));
const licenceFile = `${outfile}.LICENSE.txt`;
const legalFile = `${outfile}.LEGAL.txt`;

const result = await build({
  absWorkingDir: here,
  entryPoints: ["src/editor.js"],
  outfile,
  bundle: true,
  format: "iife",
  platform: "browser",
  target: ["es2020"],
  minify: true,
  sourcemap: false,
  splitting: false,
  charset: "utf8",
  legalComments: "external",
  banner: { js: `/*! Nimbus editor: CodeMirror 6 and its dependencies, MIT licensed; licences in ${basename(licenceFile)} */` },
  metafile: true,
  logLevel: "warning",
});

// The packages whose files are in the bundle.
const packages = new Map();
for (const input of Object.keys(result.metafile.inputs)) {
  const match = input.match(/^(.*node_modules\/((?:@[^/]+\/)?[^/]+))\//);
  if (match) packages.set(match[2], join(here, match[1]));
}

const sections = [];
for (const name of [...packages.keys()].sort()) {
  const dir = packages.get(name);
  const meta = JSON.parse(readFileSync(join(dir, "package.json"), "utf8"));
  const files = readdirSync(dir).filter((f) => /^(licen[sc]e|copying|notice)/i.test(f)).sort();
  if (!files.length) throw new Error(`${name}: no licence file found in ${dir}`);
  const texts = files.map((f) => readFileSync(join(dir, f), "utf8").trim());
  sections.push(`${"=".repeat(72)}\n${name}@${meta.version} (${meta.license})\n${"=".repeat(72)}\n\n${texts.join("\n\n")}\n`);
}

let header =
  "Third-party software bundled in editor.js (built by scripts/build-editor\n" +
  "from web/editor; versions pinned in web/editor/package-lock.json).\n\n";
let legal = "";
if (existsSync(legalFile)) {
  legal = readFileSync(legalFile, "utf8").trim();
  rmSync(legalFile);
}
if (legal) sections.push(`${"=".repeat(72)}\nLegal comments found in the sources\n${"=".repeat(72)}\n\n${legal}\n`);
writeFileSync(licenceFile, header + sections.join("\n"));

const size = readFileSync(outfile).length;
console.log(`${outfile}: ${size} bytes, ${packages.size} packages`);
