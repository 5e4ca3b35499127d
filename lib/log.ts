/**
 * Event log: one line per event, the event word first (a code such as REPLAY or
 * an event such as LOGIN), then key=value fields; `json` gives one JSON object
 * per line for machines. Callers pass only public facts: never a password, key or
 * plaintext (PROTOCOL §8 lists what each event carries).
 */
import { safeJson } from "./safe_text.ts";

export type LogFormat = "text" | "json";

export interface LogFields {
  peer?: string;
  user?: string;
  session?: string;
  detail?: string;
  [key: string]: string | number | boolean | undefined;
}

export type Logger = (event: string, fields?: LogFields) => void;

export function createLogger(
  format: LogFormat,
  write: (line: string) => void,
): Logger {
  return (event, fields = {}) => {
    const time = new Date().toISOString();
    const defined = Object.entries(fields).filter(([, v]) => v !== undefined);
    if (format === "json") {
      write(safeJson({ time, event, ...Object.fromEntries(defined) }));
      return;
    }
    const rest = defined.map(([k, v]) => `${k}=${quote(String(v))}`).join(" ");
    write(`${time} ${event}${rest ? " " + rest : ""}`);
  };
}

/**
 * Quotes a value that contains anything but a few safe ASCII characters, so one event
 * stays one line and a value (a peer's error text, say) cannot act on the operator's
 * terminal (issue 11 item 1).
 */
function quote(value: string): string {
  return /^[\w.:@/+=,-]*$/.test(value) && value !== "" ? value : safeJson(value);
}
