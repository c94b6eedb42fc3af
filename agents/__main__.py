from privgrid.roles.agent.process import main

main()
