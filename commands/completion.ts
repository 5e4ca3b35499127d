/**
 * `securechat completion bash|zsh|fish` (issue 17 item 8): a completion script made from
 * the command tree itself, so it never falls behind a new command or flag.
 */
import { Command } from "commander";
import { SecureChatError } from "../lib/errors.ts";
import { subcommand } from "./_cli.ts";

interface Node {
  /** The words that lead here, e.g. ["cert", "issue"]. */
  path: string[];
  subcommands: string[];
  options: { flags: string[]; description: string }[];
}

const SHELLS = { bash, zsh, fish } as const;

function walk(command: Command, path: string[] = []): Node[] {
  const options = command.options.map((o) => ({
    flags: [o.long, o.short].filter((f): f is string => Boolean(f)),
    description: o.description,
  }));
  options.push({ flags: ["--help"], description: "show help" });
  // `completion`'s own argument is a word to complete too.
  const words = command.name() === "completion" ? Object.keys(SHELLS) : [];
  const node = { path, subcommands: [...command.commands.map((c) => c.name()), ...words], options };
  return [node, ...command.commands.flatMap((c) => walk(c, [...path, c.name()]))];
}

const shellQuote = (text: string) => `'${text.replaceAll("'", `'\\''`)}'`;

function bash(nodes: Node[]): string {
  const paths = nodes.filter((n) => n.path.length > 0).map((n) => `"${n.path.join(" ")}"`);
  const cases = nodes.map((n) => {
    const words = [...n.subcommands, ...n.options.flatMap((o) => o.flags)].join(" ");
    return `    "${n.path.join(" ")}") words="${words}" ;;`;
  });
  return `# securechat completion for bash: eval "$(securechat completion bash)"
_securechat() {
  local cur="\${COMP_WORDS[COMP_CWORD]}" key="" w i words=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    w="\${COMP_WORDS[i]}"
    case "$key\${key:+ }$w" in
      ${paths.join("|")}) key="$key\${key:+ }$w" ;;
    esac
  done
  case "$key" in
${cases.join("\n")}
  esac
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -o default -F _securechat securechat
`;
}

function zsh(nodes: Node[]): string {
  return `# securechat completion for zsh: eval "$(securechat completion zsh)"
autoload -U +X bashcompinit && bashcompinit
${bash(nodes).split("\n").slice(1).join("\n")}`;
}

function fish(nodes: Node[]): string {
  const lines = ["# securechat completion for fish: securechat completion fish | source"];
  for (const n of nodes) {
    // fish sees which words were typed, not their order: the last word of the path is enough.
    const when = n.path.length === 0
      ? "__fish_use_subcommand"
      : `__fish_seen_subcommand_from ${n.path.at(-1)}`;
    for (const sub of n.subcommands) {
      lines.push(`complete -c securechat -f -n ${shellQuote(when)} -a ${sub}`);
    }
    for (const o of n.options) {
      const long = o.flags.find((f) => f.startsWith("--"))?.slice(2);
      const short = o.flags.find((f) => /^-[^-]/.test(f))?.slice(1);
      if (!long) continue;
      lines.push(
        `complete -c securechat -n ${shellQuote(when)} -l ${long}${short ? ` -s ${short}` : ""} ` +
          `-d ${shellQuote(o.description)}`,
      );
    }
  }
  return `${lines.join("\n")}\n`;
}

export function registerCompletion(program: Command): void {
  subcommand(program, "completion", "Print a shell completion script (bash, zsh or fish).")
    .argument("<shell>", "bash, zsh or fish")
    .addHelpText(
      "after",
      `
Examples:
  eval "$(securechat completion bash)"     # in ~/.bashrc
  eval "$(securechat completion zsh)"      # in ~/.zshrc
  securechat completion fish > ~/.config/fish/completions/securechat.fish`,
    )
    .action((shell: string) => {
      if (!Object.hasOwn(SHELLS, shell)) {
        throw new SecureChatError("USAGE", `no completion for "${shell}": use bash, zsh or fish`);
      }
      console.log(SHELLS[shell as keyof typeof SHELLS](walk(program)).trimEnd());
    });
}
