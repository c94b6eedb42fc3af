function mpc = case4_parallel
%CASE4_PARALLEL  Four-bus test case with two parallel lines between buses 2 and 4.
%   Hand-written for privgrid's tests. Bus 1 is the reference bus.
mpc.version = '2';
mpc.baseMVA = 100;

%% bus data
%	bus_i	type	Pd	Qd	Gs	Bs	area	Vm	Va	baseKV	zone	Vmax	Vmin
mpc.bus = [
	1	3	0	0	0	0	1	1	0	230	1	1.1	0.9;
	2	1	50	0	0	0	1	1	0	230	1	1.1	0.9;
	3	2	0	0	0	0	1	1	0	230	1	1.1	0.9;
	4	1	50	0	0	0	1	1	0	230	1	1.1	0.9;
];

%% generator data
%	bus	Pg	Qg	Qmax	Qmin	Vg	mBase	status	Pmax	Pmin
mpc.gen = [
	1	0	0	100	-100	1	100	1	200	0;
	3	0	0	100	-100	1	100	1	200	0;
];

%% branch data
%	fbus	tbus	r	x	b	rateA	rateB	rateC	ratio	angle	status	angmin	angmax
mpc.branch = [
	1	2	0.01	0.10	0	0	0	0	0	0	1	-360	360;
	1	3	0.01	0.20	0	0	0	0	0	0	1	-360	360;
	2	4	0.01	0.15	0	0	0	0	0	0	1	-360	360;
	2	4	0.01	0.30	0	0	0	0	0	0	1	-360	360;
	3	4	0.01	0.25	0	0	0	0	0.95	0	1	-360	360;
	3	2	0.01	0.40	0	0	0	0	0	0	0	-360	360;
];
