// main.go builds the `dfs` command line: one binary whose first word picks
// the role (master, minion, dev) or the client verb (put, get, ls, stat, rm).
// It owns the signal context, prints an error once and sets the exit code.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, restore the default handling: a second
		// Ctrl+C kills a shutdown that hangs.
		<-ctx.Done()
		stop()
	}()
	// DFS_CPUPROFILE=FILE profiles any dfs process (a master, a minion, a
	// mount, a get) until it exits, for go tool pprof.
	stopProfile := func() {}
	if p := os.Getenv("DFS_CPUPROFILE"); p != "" {
		var err error
		if stopProfile, err = startCPUProfile(p); err != nil {
			fmt.Fprintf(os.Stderr, "dfs: %v\n", err)
			os.Exit(1)
		}
	}
	code := run(ctx, os.Args, os.Stdin, os.Stdout, os.Stderr)
	stop()
	stopProfile()
	os.Exit(code)
}

// env is what a command may touch of the outside world; tests give their own.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	logger         *slog.Logger
	// security is what the command's security flags say (securityFrom).
	security *Security
}

// run runs the command line args and returns the exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	app := newApp(e)
	if n := len(args); n > 0 && args[n-1] == completionFlag {
		complete(app, args[1:n-1], stdout)
		return 0
	}
	if err := app.RunContext(ctx, reorderArgs(app, args)); err != nil {
		msg := err.Error()
		var refused *RefusedError
		if errors.As(err, &refused) {
			msg = refused.Error() // the whole story, whatever the operation
		}
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			msg = "interrupted"
		}
		fmt.Fprintf(stderr, "dfs: %s\n", strings.ReplaceAll(msg, "\n", "; "))
		return 1
	}
	return 0
}

// usageError is a mistake on the command line; the message names the help
// that shows the right usage.
type usageError struct {
	cmd string
	msg string
}

func (e *usageError) Error() string {
	help := "dfs --help"
	if e.cmd != "" {
		help = "dfs " + e.cmd + " --help"
	}
	return fmt.Sprintf("%s (see '%s')", e.msg, help)
}

func usagef(c *cli.Context, format string, a ...any) error {
	name := ""
	if c != nil && c.Command != nil {
		// A subcommand's name with its parents': "master add-peer".
		for _, l := range c.Lineage() {
			if l.Command != nil && l.Command.Name != "" && (l.App == nil || l.Command.Name != l.App.Name) {
				name = strings.TrimSpace(l.Command.Name + " " + name)
			}
		}
	}
	return &usageError{cmd: name, msg: fmt.Sprintf(format, a...)}
}

func init() {
	// -h is ls's, du's and df's human-readable sizes, as in HDFS and
	// coreutils; help is --help.
	cli.HelpFlag = &cli.BoolFlag{Name: "help", Usage: "show help"}
}

func newApp(e *env) *cli.App {
	onUsage := func(c *cli.Context, err error, _ bool) error { return usagef(c, "%v", err) }
	cmds := []*cli.Command{
		masterCommand(e), minionCommand(e), devCommand(e), chaosCommand(e),
		putCommand(e), getCommand(e), catCommand(e), lsCommand(e), statCommand(e), duCommand(e), dfCommand(e),
		mkdirCommand(e), mvCommand(e), rmCommand(e), setrepCommand(e),
		reportCommand(e), fsckCommand(e), decommissionCommand(e), mountCommand(e), benchCommand(e),
	}
	for _, c := range cmds {
		c.OnUsageError = onUsage
		c.HideHelpCommand = true
		if c.Name == "dev" { // makes a secret of its own
			c.Flags = append(c.Flags, securityFlags(true)...)
			continue
		}
		server := c.Name == "master" || c.Name == "minion"
		c.Flags = append(c.Flags, securityFlags(server)...)
		c.Before = func(c *cli.Context) (err error) {
			e.security, _, err = securityFrom(c, server, "")
			return err
		}
	}
	cmds = append(cmds, secretCommand(e), completionCommand(e))
	return &cli.App{
		Name:    "dfs",
		Usage:   "a small distributed file system: one master, many minions, one binary",
		Version: Version,
		Description: "Start a local cluster with 'dfs dev', or a master with 'dfs master' and minions with\n" +
			"'dfs minion --port N --master HOST:PORT'. Then 'dfs put FILE' and 'dfs get FILE > out'.",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "verbose", Usage: "log debug messages to stderr"},
		},
		Commands:        cmds,
		Writer:          e.stdout,
		ErrWriter:       e.stderr,
		HideHelpCommand: true,
		OnUsageError:    onUsage,
		Before: func(c *cli.Context) error {
			level := slog.LevelWarn // client verbs stay quiet
			if c.Args().Present() && slices.Contains([]string{"master", "minion", "dev"}, c.Args().First()) {
				level = slog.LevelInfo
			}
			if c.Bool("verbose") {
				level = slog.LevelDebug
			}
			e.logger = slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: level}))
			return nil
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef(nil, "unknown command %q", c.Args().First())
			}
			return cli.ShowAppHelp(c)
		},
	}
}

// reorderArgs lets flags follow the positional arguments, as in
// `dfs stat /f --json`: urfave/cli v2 (like the flag package) stops at the
// first positional argument, so the flags of the command are moved in front
// of its positionals, which follow a "--". Everything after a "--" given by
// the user stays positional.
func reorderArgs(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	i := 1
	for i < len(args) && strings.HasPrefix(args[i], "-") && args[i] != "--" {
		i++ // global flags, all boolean
	}
	if i >= len(args) {
		return args
	}
	cmd := app.Command(args[i])
	if cmd == nil {
		return args
	}
	takesValue := make(map[string]bool)
	for _, f := range cmd.Flags {
		_, isBool := f.(*cli.BoolFlag)
		for _, n := range f.Names() {
			takesValue[n] = !isBool
		}
	}
	var flags, pos []string
	rest := args[i+1:]
	for j := 0; j < len(rest); j++ {
		a := rest[j]
		if a == "--" {
			pos = append(pos, rest[j+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if !strings.Contains(name, "=") && takesValue[name] && j+1 < len(rest) {
			j++
			flags = append(flags, rest[j])
		}
	}
	out := append([]string{}, args[:i+1]...)
	out = append(out, flags...)
	if len(pos) > 0 {
		out = append(out, "--")
		out = append(out, pos...)
	}
	return out
}
