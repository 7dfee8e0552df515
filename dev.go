// dev.go runs a whole cluster in one process on loopback: `dfs dev`, the
// quickest way to try dfs, and the cluster that tests and benchmarks start.
package main

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"
)

// DevCluster is a master and Minions minions in this process. Set the
// exported fields before Start.
type DevCluster struct {
	// Dir holds master/ and minion-N/ subdirectories.
	Dir string
	// Addr is the master's listen address; port 0 picks a free port.
	Addr    string
	Minions int
	Logger  *slog.Logger
	// Security is how the master and the minions trust their peers.
	Security *Security
	// Configure, if set, adjusts the master before it starts.
	Configure func(*Master) error
	// Heartbeat, if set, is the minions' heartbeat interval.
	Heartbeat time.Duration
	// ConfigureMinion, if set, adjusts each minion before it starts.
	ConfigureMinion func(*Minion)

	Master    *Master
	MinionSet []*Minion
}

// Start starts the master, then the minions, each minion on a free
// loopback port. It returns once every minion has registered.
func (d *DevCluster) Start() (err error) {
	if d.Logger == nil {
		d.Logger = slog.Default()
	}
	d.Master = NewMaster(filepath.Join(d.Dir, "master"), d.Addr)
	d.Master.Logger = d.Logger.With("role", "master")
	d.Master.Security = d.Security
	if d.Configure != nil {
		if err := d.Configure(d.Master); err != nil {
			return err
		}
	}
	if err := d.Master.Start(); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			d.Close()
		}
	}()
	for i := 1; i <= d.Minions; i++ {
		if err := d.StartMinion(filepath.Join(d.Dir, fmt.Sprintf("minion-%d", i))); err != nil {
			return err
		}
	}
	return nil
}

// StartMinion adds a minion with its blocks in dir and waits until it has
// registered with the master.
func (d *DevCluster) StartMinion(dir string) error {
	mn := NewMinion(dir, "127.0.0.1:0", d.Master.AddrString())
	mn.Logger = d.Logger.With("role", "minion", "name", filepath.Base(dir))
	mn.Heartbeat = d.Heartbeat
	mn.Security = d.Security
	if d.ConfigureMinion != nil {
		d.ConfigureMinion(mn)
	}
	if err := mn.Start(); err != nil {
		return err
	}
	d.MinionSet = append(d.MinionSet, mn)
	mn.mu.Lock()
	ok := mn.registered
	mn.mu.Unlock()
	if !ok {
		return fmt.Errorf("minion %s did not register with the master", dir)
	}
	return nil
}

// Close stops the minions, then the master, which saves its state.
func (d *DevCluster) Close() error {
	var errs []error
	for _, mn := range d.MinionSet {
		errs = append(errs, mn.Close())
	}
	if d.Master != nil {
		errs = append(errs, d.Master.Close())
	}
	return errors.Join(errs...)
}
