// ESLint for the viewers' scripts, sandlot/**/viewer/*.js (`npm ci && npm run lint`).
// sandlot/rlm/view.py's page_script() makes a page's script: one strict-mode function whose
// body is helpers.js and then the page's own file (trajectory.js, experiment.js). helpers.js
// names what it offers in an `exported` comment; each page's file names what it takes from it
// in a `global` comment.
import js from "@eslint/js";
import globals from "globals";

export default [
  {
    files: ["sandlot/**/*.js"],
    ...js.configs.recommended,
    languageOptions: {
      sourceType: "script",
      parserOptions: { ecmaFeatures: { impliedStrict: true } },
      globals: globals.browser,
    },
  },
  {
    // A page's own file is the rest of that function's body: its names are local.
    files: ["sandlot/**/viewer/*.js"],
    ignores: ["sandlot/rlm/viewer/helpers.js"],
    languageOptions: {
      parserOptions: { ecmaFeatures: { globalReturn: true, impliedStrict: true } },
    },
  },
];
