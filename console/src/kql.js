// KQL for CodeMirror 6: a stream tokenizer for highlighting (keywords, operators, functions,
// strings, numbers, comments, timespans), and completion of tables, columns (with types),
// operators and functions, fed by /api/schema and /api/query/language.
import { StreamLanguage } from "@codemirror/language";

export function kqlLanguage(lang) {
  const operators = new Set((lang.operators || []).concat(lang.unsupportedOperators || []));
  const keywords = new Set((lang.keywords || []).concat(lang.scalarOperators || []));
  const functions = new Set((lang.functions || []).map((f) => f.name));
  return StreamLanguage.define({
    name: "kql",
    token(stream) {
      if (stream.eatSpace()) return null;
      if (stream.match("//")) { stream.skipToEnd(); return "comment"; }
      const ch = stream.peek();
      if (ch === '"' || ch === "'") {
        stream.next();
        let escaped = false, c;
        while ((c = stream.next()) != null) {
          if (c === ch && !escaped) break;
          escaped = !escaped && c === "\\";
        }
        return "string";
      }
      if (stream.match(/^@("[^"]*"|'[^']*')/)) return "string";
      if (stream.match(/^\d+(\.\d+)?(d|h|m|s|ms|microsecond|tick)?\b/)) return "number";
      if (stream.match(/^[A-Za-z_][\w-]*/)) {
        let word = stream.current();
        // operators may have dashes (project-away); plain names may not: give the dash back
        if (word.includes("-") && !operators.has(word) && !keywords.has(word)) {
          stream.backUp(word.length - word.indexOf("-"));
          word = stream.current();
        }
        if (operators.has(word)) return "keyword";
        if (keywords.has(word)) return "operatorKeyword";
        if (functions.has(word) && stream.match(/^\s*\(/, false)) return "function(variableName)";
        if (/^[A-Z]/.test(word)) return "typeName";
        return "variableName";
      }
      if (stream.match(/^(==|!=|<=|>=|=~|!~|\|)/)) return "operator";
      stream.next();
      return "punctuation";
    },
    languageData: { commentTokens: { line: "//" } },
  });
}

// The query block around a position: lines between blank lines (as in Defender).
export function blockAt(doc, pos) {
  const line = doc.lineAt(pos);
  const blank = (n) => doc.line(n).text.trim() === "";
  if (blank(line.number)) {
    // on a blank line: the block just above, if any
    let n = line.number;
    while (n > 1 && blank(n)) n--;
    if (blank(n)) return null;
    return blockAt(doc, doc.line(n).from);
  }
  let first = line.number, last = line.number;
  while (first > 1 && !blank(first - 1)) first--;
  while (last < doc.lines && !blank(last + 1)) last++;
  const from = doc.line(first).from, to = doc.line(last).to;
  return { from, to, text: doc.sliceString(from, to) };
}

const TABULAR_START = /(^|\|)\s*([\w-]*)$/;

export function completionSource(schema, lang) {
  const tables = new Map(schema.map((t) => [t.name, t]));
  const tableOptions = schema.map((t) => ({ label: t.name, type: "class", detail: "table", info: t.description || "" }));
  const operatorOptions = (lang.operators || []).map((o) => ({ label: o, type: "keyword", detail: "operator", boost: 2 }));
  const fnOptions = (lang.functions || []).map((f) => ({
    label: f.name,
    type: "function",
    detail: f.kind === "alias" ? `alias of ${f.aliasOf}` : `${f.kind} → ${f.returns}`,
    apply: f.name + "(",
  }));
  const scalarOps = (lang.scalarOperators || []).map((o) => ({ label: o, type: "keyword", detail: "string operator" }));
  const keywordOptions = (lang.keywords || []).map((k) => ({ label: k, type: "keyword" }));
  return (context) => {
    const word = context.matchBefore(/[\w-]*/);
    if (!word || (word.from === word.to && !context.explicit)) return null;
    const block = blockAt(context.state.doc, context.pos);
    const before = block ? context.state.sliceDoc(block.from, context.pos) : "";
    const noPipeYet = !before.includes("|");
    if (noPipeYet && /^\s*[\w-]*$/.test(before)) {
      return { from: word.from, options: tableOptions, validFor: /^\w*$/ };
    }
    if (TABULAR_START.test(before)) {
      return { from: word.from, options: operatorOptions, validFor: /^[\w-]*$/ };
    }
    // columns of the block's source table (its first word), with their types
    const first = (block ? block.text : "").match(/^\s*([A-Za-z_]\w*)/);
    const table = first ? tables.get(first[1]) : null;
    const columnOptions = table
      ? table.columns.map((c) => ({ label: c.name, type: "property", detail: c.type, info: c.description || "", boost: 3 }))
      : [];
    return {
      from: word.from,
      options: columnOptions.concat(fnOptions, scalarOps, keywordOptions, tableOptions),
      validFor: /^\w*$/,
    };
  };
}
