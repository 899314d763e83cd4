package ata

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"time"
)

// Transport executes one ATA PASS-THROUGH command and returns the sense
// data (which carries the ATA registers when CK_COND is set).
type Transport interface {
	Exec(ctx context.Context, cdb CDB, dir Direction, data []byte, timeout time.Duration) (sense []byte, err error)
}

// Disk is a SATA drive reached through a Transport.
type Disk struct {
	T Transport
	// Tick is how often progress is reported during ERASE UNIT (default 5 s).
	Tick time.Duration
}

// commandTimeout bounds the short commands.
const commandTimeout = 30 * time.Second

func (d *Disk) exec(ctx context.Context, cdb CDB, dir Direction, data []byte, timeout time.Duration) error {
	sense, err := d.T.Exec(ctx, cdb, dir, data, timeout)
	if err != nil {
		return fmt.Errorf("ata command %#02x: %w", cdb[14], err)
	}
	return CheckSense(cdb[14], sense)
}

// Identify reads and parses IDENTIFY DEVICE.
func (d *Disk) Identify(ctx context.Context) (Identify, error) {
	buf := make([]byte, 512)
	if err := d.exec(ctx, IdentifyDevice(), FromDevice, buf, commandTimeout); err != nil {
		return Identify{}, err
	}
	return ParseIdentify(buf)
}

// Result says what SecureErase did.
type Result struct {
	Method   string
	Duration time.Duration
}

// SecureErase runs SECURITY SET PASSWORD (a random temporary user
// password), ERASE PREPARE and ERASE UNIT (enhanced when supported), then
// checks with IDENTIFY that security is disabled again, as a completed
// erase leaves it. A failure after the password was set tries SECURITY
// DISABLE PASSWORD so the drive is not left locked.
func (d *Disk) SecureErase(ctx context.Context, progress func(done, total uint64)) (Result, error) {
	start := time.Now()
	id, err := d.Identify(ctx)
	if err != nil {
		return Result{}, err
	}
	steps, err := Plan(id)
	if err != nil {
		return Result{}, err
	}
	var pw Password
	if _, err := rand.Read(pw[:]); err != nil {
		return Result{}, err
	}
	set := PasswordBlock(false, false, pw)
	if err := d.exec(ctx, SecuritySetPassword(), ToDevice, set[:], commandTimeout); err != nil {
		return Result{}, fmt.Errorf("SECURITY SET PASSWORD: %w", err)
	}
	method := "ata-security-erase"
	if steps.Enhanced {
		method += "-enhanced"
	}
	if err := d.erase(ctx, pw, steps, progress); err != nil {
		return Result{}, d.cleanup(ctx, pw, err)
	}
	after, err := d.Identify(ctx)
	if err != nil {
		return Result{}, d.cleanup(ctx, pw, fmt.Errorf("IDENTIFY after erase: %w", err))
	}
	if after.Security.Enabled || after.Security.Locked {
		return Result{}, d.cleanup(ctx, pw, errors.New("security is still enabled after SECURITY ERASE UNIT: the erase did not complete"))
	}
	return Result{Method: method, Duration: time.Since(start)}, nil
}

func (d *Disk) erase(ctx context.Context, pw Password, st Steps, progress func(done, total uint64)) error {
	if err := d.exec(ctx, SecurityErasePrepare(), NoData, nil, commandTimeout); err != nil {
		return fmt.Errorf("SECURITY ERASE PREPARE: %w", err)
	}
	est := uint64(st.Timeout.Seconds())
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := d.Tick
		if tick <= 0 {
			tick = 5 * time.Second
		}
		t := time.NewTicker(tick)
		defer t.Stop()
		begin := time.Now()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				if progress != nil {
					progress(min(uint64(time.Since(begin).Seconds()), est), est)
				}
			}
		}
	}()
	unit := PasswordBlock(false, st.Enhanced, pw)
	err := d.exec(ctx, SecurityEraseUnit(), ToDevice, unit[:], st.Timeout)
	close(stop)
	<-done
	if err != nil {
		return fmt.Errorf("SECURITY ERASE UNIT: %w", err)
	}
	if progress != nil {
		progress(est, est)
	}
	return nil
}

// cleanup disables the temporary password after a failure.
func (d *Disk) cleanup(ctx context.Context, pw Password, cause error) error {
	blk := PasswordBlock(false, false, pw)
	if err := d.exec(context.WithoutCancel(ctx), SecurityDisablePassword(), ToDevice, blk[:], commandTimeout); err != nil {
		return errors.Join(cause, fmt.Errorf("SECURITY DISABLE PASSWORD (the drive may stay locked with the temporary password): %w", err))
	}
	return cause
}
