// completion.go is `dfs completion bash|zsh|fish`: a script for the shell
// that completes dfs's commands and flags. The bash and zsh scripts ask dfs
// itself what may come next (`dfs WORDS... --generate-bash-completion`,
// answered by complete); fish gets urfave/cli's own script.
package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/urfave/cli/v2"
)

// completionFlag, last on a command line, asks for completions of the word
// before it instead of running anything.
const completionFlag = "--generate-bash-completion"

// complete prints what may replace the last of words (the one being typed):
// the commands before one is given, the flags of the command (or the
// global ones) for a word that starts with "-", else nothing, so that the
// shell completes file names.
func complete(app *cli.App, words []string, w io.Writer) {
	cur := ""
	if len(words) > 0 {
		cur, words = words[len(words)-1], words[:len(words)-1]
	}
	var cmd *cli.Command
	for _, word := range words {
		if !strings.HasPrefix(word, "-") {
			cmd = app.Command(word)
			break
		}
	}
	var names []string
	switch {
	case strings.HasPrefix(cur, "-"):
		flags := app.Flags
		if cmd != nil {
			flags = cmd.Flags
		}
		for _, f := range append(flags, cli.HelpFlag) {
			for _, n := range f.Names() {
				if len(n) == 1 {
					names = append(names, "-"+n)
				} else {
					names = append(names, "--"+n)
				}
			}
		}
	case cmd == nil:
		for _, c := range app.Commands {
			if !c.Hidden {
				names = append(names, c.Name)
			}
		}
	}
	for _, n := range names {
		if strings.HasPrefix(n, cur) && !slices.Contains(words, n) {
			fmt.Fprintln(w, n)
		}
	}
}

// bashCompletion asks dfs, with the words typed so far, what may come next.
const bashCompletion = `# dfs completion for bash: eval "$(dfs completion bash)"
_dfs_complete() {
	local cur="${COMP_WORDS[COMP_CWORD]}" opts
	opts=$("${COMP_WORDS[@]:0:$COMP_CWORD}" "$cur" --generate-bash-completion 2>/dev/null)
	COMPREPLY=($(compgen -W "${opts}" -- "${cur}"))
}
complete -o bashdefault -o default -F _dfs_complete dfs
`

// zshCompletion is the bash one through zsh's bashcompinit.
const zshCompletion = `# dfs completion for zsh: eval "$(dfs completion zsh)"
autoload -U +X bashcompinit && bashcompinit
` + bashCompletion

func completionCommand(e *env) *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script (bash, zsh or fish)",
		ArgsUsage: "bash|zsh|fish",
		Description: "Examples: eval \"$(dfs completion bash)\" in ~/.bashrc ;\n" +
			"eval \"$(dfs completion zsh)\" in ~/.zshrc ; dfs completion fish > ~/.config/fish/completions/dfs.fish",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef(c, "completion takes one shell: bash, zsh or fish")
			}
			switch c.Args().First() {
			case "bash":
				_, err := io.WriteString(e.stdout, bashCompletion)
				return err
			case "zsh":
				_, err := io.WriteString(e.stdout, zshCompletion)
				return err
			case "fish":
				s, err := c.App.ToFishCompletion()
				if err != nil {
					return fmt.Errorf("completion fish: %w", err)
				}
				_, err = io.WriteString(e.stdout, s)
				return err
			}
			return usagef(c, "unknown shell %q (want bash, zsh or fish)", c.Args().First())
		},
	}
}
